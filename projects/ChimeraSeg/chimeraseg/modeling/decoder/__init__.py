"""modeling/decoder"""
