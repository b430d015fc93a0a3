using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;
using RecurFormer.Server.Errors;
using RecurFormer.Server.Hosting;

namespace RecurFormer.Server.Auth;

/// <summary>
/// The accepted API keys (configuration plus the key file), hashed once so that every comparison takes the same time
/// whatever the key's length or content.
/// </summary>
public sealed class ApiKeyStore
{
    private readonly byte[][] _hashes;

    public ApiKeyStore(IOptions<ServerOptions> options)
    {
        var keys = options.Value.ApiKeys.Where(k => !string.IsNullOrWhiteSpace(k)).Select(k => k.Trim()).ToList();
        if (options.Value.ApiKeyFile is { Length: > 0 } file)
        {
            var path = ModelLocator.Find(file, isDirectory: false)?.FullPath ?? file;
            keys.AddRange(File.ReadAllLines(path).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')));
        }
        _hashes = keys.Distinct(StringComparer.Ordinal).Select(Hash).ToArray();
    }

    public bool Enabled => _hashes.Length > 0;

    public bool IsValid(string candidate)
    {
        var hash = Hash(candidate);
        var match = false;
        // No early exit: the time taken does not tell which key (or whether any) came close.
        foreach (var known in _hashes)
        {
            match |= CryptographicOperations.FixedTimeEquals(hash, known);
        }
        return match;
    }

    private static byte[] Hash(string key) => SHA256.HashData(Encoding.UTF8.GetBytes(key));
}

/// <summary>Checks <c>Authorization: Bearer KEY</c> on <c>/v1/*</c> only; health, metrics, docs and tokenize stay open, as in vLLM.</summary>
public sealed class ApiKeyMiddleware(RequestDelegate next, ApiKeyStore keys)
{
    public Task InvokeAsync(HttpContext context)
    {
        if (!keys.Enabled || !context.Request.Path.StartsWithSegments("/v1") || HttpMethods.IsOptions(context.Request.Method))
        {
            return next(context);
        }
        var header = context.Request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase) && keys.IsValid(header[scheme.Length..].Trim()))
        {
            return next(context);
        }
        context.Response.Headers.WWWAuthenticate = "Bearer";
        var message = header.Length == 0
            ? "Missing API key: send it as 'Authorization: Bearer YOUR_KEY'"
            : "Invalid API key";
        return OpenAiErrors.WriteAsync(context, new ApiException(401, message, null, "invalid_api_key"));
    }
}
