"""modeling/losses"""
