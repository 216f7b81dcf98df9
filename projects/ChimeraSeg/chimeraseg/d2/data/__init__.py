"""d2/data"""
