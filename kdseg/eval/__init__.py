"""kdseg.eval"""
