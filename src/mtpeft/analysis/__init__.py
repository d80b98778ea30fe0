"""Source analysis: tree-sitter extraction, analyze, SARIF and HTML reports."""
