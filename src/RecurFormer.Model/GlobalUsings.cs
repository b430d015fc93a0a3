// TorchSharp.Modules also defines Linear, Embedding and RMSNorm; only Parameter is wanted from it.
global using Parameter = TorchSharp.Modules.Parameter;
