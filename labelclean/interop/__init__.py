"""Formats of other tools: Label Studio import tasks and exports."""
