"""kdseg.data"""
