"""modeling/backbone"""
