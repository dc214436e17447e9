"""Pure text -> model parsers: no I/O, no asyncio, no textual; standard library only."""
