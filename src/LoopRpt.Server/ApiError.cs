using System.Text.Json;

namespace LoopRpt.Server;

/// <summary>
/// An error answered in OpenAI's shape: <c>{"error": {"message", "type", "param", "code"}}</c> with an HTTP status.
/// </summary>
internal sealed class ApiError(int status, string message, string type = "invalid_request_error", string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    /// <summary>For a server error, the id its reply and its log line both carry; null otherwise.</summary>
    public string? ErrorId { get; private init; }

    public object Body => new { error = new { message = Message, type = Type, param = Param, code = Code } };

    public static ApiError BadRequest(string message, string? param = null) => new(400, message, param: param, code: "invalid_value");

    public static ApiError ModelNotFound(string model, string served)
        => new(404, $"The model '{model}' does not exist; this server serves '{served}'.", param: "model", code: "model_not_found");

    /// <summary>
    /// The OpenAI-shaped error for an exception thrown while serving a request. <paramref name="field"/> turns the
    /// parameter name an exception carries (e.g. <c>values</c> of <c>IEmbeddingGenerator.GenerateAsync</c>) into the
    /// request field the client sent; null leaves it as is.
    /// </summary>
    public static ApiError From(Exception e, bool timedOut, Func<string?, string?>? field = null)
    {
        field ??= name => name;
        return e switch
        {
            ApiError a => a,
            OperationCanceledException when timedOut => new(408, "The request took longer than the server's timeout and was cancelled.", "timeout_error", code: "timeout"),
            JsonException j => new(400, "The request body is not valid JSON: " + j.Message, code: "invalid_json"),
            // LoopRpt's chat client refuses a prompt plus token budget beyond the model's context this way (OpenAI's code for it).
            ArgumentOutOfRangeException { ParamName: "messages" } a => new(400, Clean(a.Message), param: field(a.ParamName), code: "context_length_exceeded"),
            ArgumentException a => new(400, Clean(a.Message), param: field(a.ParamName), code: "invalid_value"),
            NotSupportedException n => new(400, n.Message, code: "unsupported_value"),
            InvalidDataException d => new(400, d.Message, code: "invalid_value"),
            _ => ServerError(),
        };
    }

    /// <summary>
    /// A 500 that tells the client nothing of the failure (a native message carries libtorch's C++ backtrace and the
    /// server's paths): a short message and an id; the server logs the exception with its stack trace under that id.
    /// </summary>
    private static ApiError ServerError()
    {
        string id = "err_" + Guid.NewGuid().ToString("N")[..16];
        return new(500, $"The server had an error while processing the request (error id {id}); its log has the details.", "server_error")
        {
            ErrorId = id,
        };
    }

    /// <summary>ArgumentException appends " (Parameter 'x')" and the actual value; the param field carries the name.</summary>
    private static string Clean(string message)
    {
        int at = message.IndexOf(" (Parameter '", StringComparison.Ordinal);
        return at > 0 ? message[..at] : message;
    }
}
