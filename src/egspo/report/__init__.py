"""Reporting: tables, figures and statistics in results/ from run outputs."""
