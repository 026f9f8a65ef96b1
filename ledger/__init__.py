"""ledger: provision Webex Calling in bulk from CSV, with a durable ledger of every row."""

__version__ = "0.1.0"
