"""kdseg.lit"""
