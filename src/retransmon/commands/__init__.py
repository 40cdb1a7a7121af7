"""One module per subcommand: its arguments and what it runs. cli.py only parses and dispatches."""
