"""The read models chatledger ships: chat history, tool audit, conversation index, search."""
