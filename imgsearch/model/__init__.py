"""How a vector is made: model sources (specs), the numerics contract, the torch encoder, the torch-free ONNX
exports and tokenizer, the runtime that chooses between them, and one compat module for upstream internals.

Nothing is imported here: a query that needs only the ONNX text export must not pay for torch.
"""
