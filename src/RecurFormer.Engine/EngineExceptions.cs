namespace RecurFormer.Engine;

/// <summary>The request itself is invalid (the server answers 400, naming <see cref="Param"/>).</summary>
public sealed class EngineRequestException(string? param, string message, string code = "invalid_request") : Exception(message)
{
    public string? Param { get; } = param;
    public string Code { get; } = code;
}

/// <summary>The waiting queue is full (the server answers 429 with Retry-After).</summary>
public sealed class EngineOverloadedException(string message) : Exception(message);

/// <summary>The engine is not running: starting, draining or stopped (the server answers 503).</summary>
public sealed class EngineUnavailableException(string message) : Exception(message);
