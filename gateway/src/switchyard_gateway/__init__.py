"""Switchyard's gateway: one OpenAI-compatible front door for the active LLM backend."""

__version__ = "1.0.0"
