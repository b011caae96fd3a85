"""The LLM run kinds, one module each: what differs between them (plan, measure, report); the
lifecycle they share is ``experiments.llm.lifecycle``."""
