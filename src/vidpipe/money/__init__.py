"""Prices, estimates, budgets, credits and the ledger."""
