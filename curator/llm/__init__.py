"""Caption generators: the offline template generator and (issue 5) the LLM client."""
