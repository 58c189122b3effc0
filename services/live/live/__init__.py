"""The live service: real-time view counters (faust-streaming) and the analytics web page."""
