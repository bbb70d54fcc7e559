"""Tests of bonsai.data, the data set loaders and the batch iterator."""
