"""Working with a real photo library: XMP sidecars, query syntax, filters, duplicates, renames, keywords."""
