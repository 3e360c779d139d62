"""kdseg.distill"""
