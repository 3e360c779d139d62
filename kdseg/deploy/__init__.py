"""kdseg.deploy"""
