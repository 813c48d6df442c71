"""Reading an institution's real data: sources, the mapping, checks, transient fields.

``node.data.load`` is the entry point most callers want; this package holds the parts.
"""
