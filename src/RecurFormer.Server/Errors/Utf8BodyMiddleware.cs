using System.Text.Unicode;

namespace RecurFormer.Server.Errors;

/// <summary>
/// JSON must be UTF-8, but the parser only transcodes the strings it uses: invalid bytes in an ignored field would
/// slip through, and in a kept JsonElement they would surface late. Checking the whole body once up front turns every
/// such body into a 400. Reading the body here also applies the size limit (a 413) before any endpoint runs.
/// </summary>
public sealed class Utf8BodyMiddleware(RequestDelegate next)
{
    public async Task InvokeAsync(HttpContext context)
    {
        var request = context.Request;
        if (HttpMethods.IsPost(request.Method) && request.HasJsonContentType())
        {
            var buffer = new MemoryStream();
            await request.Body.CopyToAsync(buffer, context.RequestAborted);
            if (!Utf8.IsValid(buffer.GetBuffer().AsSpan(0, (int)buffer.Length)))
            {
                throw new ApiException(400, "Invalid request body: the body is not valid UTF-8", null, "invalid_json");
            }
            buffer.Position = 0;
            request.Body = buffer;
            context.Response.RegisterForDispose(buffer);
        }
        await next(context);
    }
}
