"""Differential Equation Units."""
