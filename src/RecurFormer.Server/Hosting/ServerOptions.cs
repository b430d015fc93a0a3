using System.ComponentModel.DataAnnotations;
using RecurFormer.Engine;

namespace RecurFormer.Server.Hosting;

/// <summary>Server-wide settings, bound from the <c>RecurFormer</c> configuration section.</summary>
public sealed class ServerOptions
{
    public const string Section = "RecurFormer";

    /// <summary>Interface to listen on when no <c>Urls</c> are configured.</summary>
    [Required]
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>Port to listen on when no <c>Urls</c> are configured; 0 picks a free port.</summary>
    [Range(0, 65535)]
    public int Port { get; set; } = 8000;

    /// <summary>Keys accepted on <c>/v1/*</c> as <c>Authorization: Bearer KEY</c>; none = no authentication.</summary>
    public List<string> ApiKeys { get; set; } = [];

    /// <summary>A file with one API key per line (blank lines and lines starting with # ignored), added to <see cref="ApiKeys"/>.</summary>
    public string? ApiKeyFile { get; set; }

    /// <summary>Largest request body, e.g. <c>8MB</c>; larger bodies get a 413.</summary>
    [Required]
    public string MaxRequestBodySize { get; set; } = "8MB";

    /// <summary>Longest a request may wait in the engine's queue before it is refused with a 503.</summary>
    public TimeSpan QueueTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Longest a whole generation may take (0 = no limit); then it is cancelled.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>On SIGTERM, how long running requests may take to finish before they are cancelled.</summary>
    public TimeSpan DrainGracePeriod { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Interval of the SSE comment sent to a stream that has nothing to say yet (queued, long prefill).</summary>
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Seconds suggested in <c>Retry-After</c> on 429 and 503.</summary>
    [Range(1, 3600)]
    public int RetryAfterSeconds { get; set; } = 1;

    public long MaxRequestBodyBytes => EngineOptions.ParseBytes(MaxRequestBodySize);
}
