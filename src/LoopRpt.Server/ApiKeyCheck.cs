using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace LoopRpt.Server;

/// <summary>
/// The <c>Authorization: Bearer &lt;key&gt;</c> check of the <c>/v1</c> routes (<see cref="LoopRptServerOptions.ApiKey"/>):
/// the presented key's SHA-256 is compared with the configured key's in constant time, so neither the key's bytes nor
/// its length can be learned from response times.
/// </summary>
internal sealed class ApiKeyCheck(IOptions<LoopRptServerOptions> options)
{
    private readonly byte[]? _hash = options.Value.ResolvedApiKey() is { } key ? Hash(key) : null;

    private static byte[] Hash(string key) => SHA256.HashData(Encoding.UTF8.GetBytes(key));

    public bool Allows(string? authorization)
    {
        if (_hash is null) return true;
        const string scheme = "Bearer ";
        var presented = authorization is not null && authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase) ? authorization[scheme.Length..].Trim() : "";
        return CryptographicOperations.FixedTimeEquals(Hash(presented), _hash);
    }

    /// <summary>The endpoint filter: HTTP 401 <c>invalid_api_key</c> (with <c>WWW-Authenticate: Bearer</c>) unless the key matches.</summary>
    public static async ValueTask<object?> Filter(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (http.RequestServices.GetRequiredService<ApiKeyCheck>().Allows(http.Request.Headers.Authorization))
            return await next(context);
        http.Response.Headers.WWWAuthenticate = "Bearer";
        var error = new ApiError(401, "Incorrect or missing API key: send it as 'Authorization: Bearer <key>'.", code: "invalid_api_key");
        return Results.Json(error.Body, statusCode: 401);
    }
}
