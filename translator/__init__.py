"""translator: turn soft prompts into hard prompts."""
