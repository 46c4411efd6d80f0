"""The built-in query criteria and strategies of focal-al, registered through entry points like any plugin."""
