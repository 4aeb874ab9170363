"""The gateway's routes, one router per concern: serving, feedback, operations, admin."""
