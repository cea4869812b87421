"""The ground floor of Tandem: the error types a user may see and the one settings object.

Everything else imports from here; this package imports nothing of Tandem's.
"""
