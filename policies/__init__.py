"""Pure, synchronous traffic policies: no I/O, no clock, no logging (see STYLE.md)."""
