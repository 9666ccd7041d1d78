"""The exec'd container launcher and what it shares with cmld.

Everything in this package is import-light (no asyncio, no protobuf): the launcher is a fresh
Python process on the start path of every container, so its import time is start latency.
"""
