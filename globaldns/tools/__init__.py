"""Operator tools run from the command line: `globaldns doctor`."""
