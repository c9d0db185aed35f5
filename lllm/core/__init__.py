"""Host-side agent core: prompts, dialogs, agents, tactics, configs and the runtime registry."""
