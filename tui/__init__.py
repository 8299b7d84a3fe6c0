"""The Textual chat UI (``sinkchat run``).  It chats through ``sinkchat.Chat``, never through llama.cpp."""
