use clap::{Parser, Subcommand};

use spazi::cli;

/// Spazi: bookings and building management for the Spazi per l'Italia network.
#[derive(Parser)]
#[command(name = "spazi", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (migrates and seeds an empty database first).
    Serve,
    /// Run everything on the embedded defaults, with demo accounts and bookings.
    Demo,
    /// Apply pending database migrations.
    Migrate,
    /// Load the network of 250 sites (idempotent).
    Seed {
        #[arg(long, default_value_t = spazi::domain::network::DEFAULT_SEED)]
        seed: u64,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: cli::UserCommand,
    },
    /// Manage organizations (companies).
    Organization {
        #[command(subcommand)]
        command: cli::OrganizationCommand,
    },
    /// Manage building devices.
    Device {
        #[command(subcommand)]
        command: cli::devices::DeviceCommand,
    },
    /// Publish simulated building telemetry for the network to an MQTT broker.
    Simulate(cli::simulate::SimulateArgs),
    /// Broker identities for the devices and the service.
    Mqtt {
        #[command(subcommand)]
        command: cli::devices::MqttCommand,
    },
}

fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    let args = Cli::parse();
    match args.command {
        Command::Serve => cli::serve(),
        Command::Demo => cli::demo::run(),
        Command::Migrate => cli::migrate(),
        Command::Seed { seed } => cli::seed(seed),
        Command::User { command } => cli::user(command),
        Command::Organization { command } => cli::organization(command),
        Command::Device { command } => cli::devices::device(command),
        Command::Mqtt { command } => cli::devices::mqtt(command),
        Command::Simulate(args) => cli::simulate::run(args),
    }
}
