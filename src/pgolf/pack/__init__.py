"""Packing: the artifact format, codecs, its meta schema and the size accounting."""
