"""One module per tab. Each exposes plain inference functions (tests call them directly),
`TITLE`, and `build()` which lays out the tab's components and wires its events."""
