using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LoopRpt.AI;
using LoopRpt.Inference;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;

namespace LoopRpt.Server;

/// <summary>Reads OpenAI request bodies into LoopRpt's options, with 400s that name the offending field.</summary>
internal static class RequestReader
{
    private static readonly JsonDocumentOptions Strict = new() { AllowDuplicateProperties = false };

    /// <summary>
    /// The body as a JSON object, refusing bodies over the limit (413), anything but an object, and strings that are not
    /// valid Unicode (invalid or CESU-8 UTF-8 bytes, a lone surrogate escape): 400 naming the field that holds them.
    /// </summary>
    public static async Task<JsonObject> ReadObjectAsync(HttpRequest request, long limit, CancellationToken cancellationToken)
    {
        if (request.ContentLength is { } declared && declared > limit)
            throw new ApiError(413, $"The request body has {declared} bytes; this server accepts at most {limit}.", code: "request_too_large");
        using var buffer = new MemoryStream();
        var chunk = new byte[16384];
        int read;
        while ((read = await request.Body.ReadAsync(chunk, cancellationToken)) > 0)
        {
            if (buffer.Length + read > limit)
                throw new ApiError(413, $"The request body exceeds {limit} bytes, the most this server accepts.", code: "request_too_large");
            buffer.Write(chunk, 0, read);
        }
        if (buffer.Length == 0) throw new ApiError(400, "The request body is empty; expected a JSON object.", code: "invalid_json");
        var bytes = buffer.ToArray();
        CheckStrings(bytes);
        var node = JsonNode.Parse(bytes, documentOptions: Strict);
        return node as JsonObject ?? throw new ApiError(400, "The request body must be a JSON object.", code: "invalid_json");
    }

    /// <summary>Every string and property name must decode to valid UTF-16 (no invalid UTF-8, no lone surrogate).</summary>
    private static void CheckStrings(byte[] bytes)
    {
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
        string? field = null;
        var path = new StringBuilder();
        try
        {
            while (reader.Read())
            {
                if (reader.CurrentDepth == 1 && reader.TokenType == JsonTokenType.PropertyName) field = null;
                if (reader.TokenType is not (JsonTokenType.String or JsonTokenType.PropertyName)) continue;
                string? text;
                try
                {
                    text = reader.GetString();
                }
                catch (InvalidOperationException)
                {
                    throw Invalid(field);
                }
                if (!IsValidUtf16(text)) throw Invalid(field);
                if (reader.CurrentDepth == 1 && reader.TokenType == JsonTokenType.PropertyName) field = text;
            }
        }
        catch (JsonException)
        {
            // Not JSON: JsonNode.Parse reports it with its position (HTTP 400 invalid_json).
        }
    }

    private static ApiError Invalid(string? field) => new(400,
        (field is null ? "A property name" : $"The field '{field}' holds a string that") + " is not valid Unicode (invalid UTF-8 bytes, CESU-8 surrogates, or a lone surrogate escape such as \\ud800).",
        param: field, code: "invalid_value");

    private static bool IsValidUtf16(string? s)
    {
        if (s is null) return true;
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i])) return false;
        }
        return true;
    }

    public static void CheckModel(JsonObject body, string modelId)
    {
        if (body["model"] is not { } m || m.GetValueKind() == JsonValueKind.Null) return;
        if (m.GetValueKind() != JsonValueKind.String) throw ApiError.BadRequest("model must be a string.", "model");
        if ((string)m! != modelId) throw ApiError.ModelNotFound((string)m!, modelId);
    }

    /// <summary>
    /// Sampling fields → ChatOptions (max_tokens or max_completion_tokens, temperature, top_p, seed, stop,
    /// exit_threshold). <see cref="ChatOptions.MaxOutputTokens"/> stays null when the request gives no limit (the room
    /// left in the context, decided with the prompt).
    /// </summary>
    public static ChatOptions Options(JsonObject body, LoopRptServerOptions server)
    {
        var o = new ChatOptions();
        var maxTokensField = Present(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
        if (Present(body, "max_completion_tokens") && Present(body, "max_tokens") && Int(body, "max_tokens") != Int(body, "max_completion_tokens"))
            throw ApiError.BadRequest("max_tokens and max_completion_tokens differ; give one of them.", "max_tokens");
        if (Int(body, maxTokensField) is { } m)
        {
            if (m < 1) throw ApiError.BadRequest($"{maxTokensField} must be at least 1, got {m}.", maxTokensField);
            if (server.MaxTokens is { } limit && m > limit) throw ApiError.BadRequest($"{maxTokensField} {m} exceeds this server's limit of {limit}.", maxTokensField);
            o.MaxOutputTokens = m;
        }
        if (Number(body, "temperature") is { } t)
            o.Temperature = t >= 0 ? (float)t : throw ApiError.BadRequest($"temperature must be >= 0 (0 = greedy), got {Show(t)}.", "temperature");
        if (Number(body, "top_p") is { } p)
            o.TopP = p is > 0 and <= 1 ? (float)p : throw ApiError.BadRequest($"top_p must lie in (0, 1], got {Show(p)}.", "top_p");
        if (Present(body, "seed"))
            o.Seed = body["seed"]!.GetValueKind() == JsonValueKind.Number && body["seed"]!.AsValue().TryGetValue<long>(out var seed) && seed >= 0 ? seed
                : throw ApiError.BadRequest($"seed must be an integer from 0 to {long.MaxValue}, got {body["seed"]!.ToJsonString()}.", "seed");
        if (Present(body, "stop"))
        {
            var stop = body["stop"]!;
            var stops = stop.GetValueKind() switch
            {
                JsonValueKind.String => [(string)stop!],
                JsonValueKind.Array => stop.AsArray().Select(x => x?.GetValueKind() == JsonValueKind.String ? (string)x! : throw ApiError.BadRequest("stop must be a string or an array of strings.", "stop")).ToList(),
                _ => throw ApiError.BadRequest("stop must be a string or an array of strings.", "stop"),
            };
            if (stops.Count > 4) throw ApiError.BadRequest($"stop holds {stops.Count} sequences; at most 4 are allowed.", "stop");
            o.StopSequences = stops;
        }
        if (ExitThreshold(body) is { } q)
            o.AdditionalProperties = new AdditionalPropertiesDictionary { [LoopRptChatClient.ExitThresholdKey] = q };
        return o;
    }

    /// <summary>The most choices one request may ask for (<c>n</c>).</summary>
    public const int MaxChoices = 16;

    /// <summary>The most alternatives per token a completions request may ask for (<c>logprobs</c>), as OpenAI allows.</summary>
    public const int MaxCompletionLogprobs = 5;

    /// <summary>The choices asked for (<c>n</c>): 1 to <see cref="MaxChoices"/>, default 1.</summary>
    public static int Choices(JsonObject body)
    {
        var n = Int(body, "n") ?? 1;
        return n is >= 1 and <= MaxChoices ? n : throw ApiError.BadRequest($"n must lie in [1, {MaxChoices}] on this server, got {n}.", "n");
    }

    /// <summary>
    /// Chat's <c>logprobs</c> (true/false) and <c>top_logprobs</c> (0 to 20; above 0 only with logprobs): the alternatives per
    /// token, or null when no log-probabilities are asked for.
    /// </summary>
    public static int? ChatLogprobs(JsonObject body)
    {
        bool on = Bool(body, "logprobs");
        var top = Int(body, "top_logprobs");
        if (top is > 0 && !on) throw ApiError.BadRequest("top_logprobs needs logprobs: true.", "top_logprobs");
        if (top is < 0 or > GenerationRow.MaxTopLogprobs)
            throw ApiError.BadRequest($"top_logprobs must lie in [0, {GenerationRow.MaxTopLogprobs}], got {top}.", "top_logprobs");
        return on ? top ?? 0 : null;
    }

    /// <summary>Completions' <c>logprobs</c>: 0 to <see cref="MaxCompletionLogprobs"/> alternatives per token, or null when absent.</summary>
    public static int? CompletionLogprobs(JsonObject body)
    {
        var top = Int(body, "logprobs");
        return top is null or (>= 0 and <= MaxCompletionLogprobs) ? top
            : throw ApiError.BadRequest($"logprobs must lie in [0, {MaxCompletionLogprobs}], got {top}.", "logprobs");
    }

    /// <summary>Whether the streamed reply should end with a usage chunk (<c>stream_options.include_usage</c>).</summary>
    public static bool IncludeUsage(JsonObject body)
    {
        if (!Present(body, "stream_options")) return false;
        if (body["stream_options"] is not JsonObject so) throw ApiError.BadRequest("stream_options must be an object.", "stream_options");
        foreach (var (key, _) in so)
            if (!RequestFields.StreamOptions.Contains(key))
                throw new ApiError(400, $"stream_options.{key} is not supported by LoopRpt's server; it reads {string.Join(" and ", RequestFields.StreamOptions)}.", param: "stream_options", code: "unsupported_parameter");
        Bool(so, "include_obfuscation", "stream_options");
        return Bool(so, "include_usage", "stream_options");
    }

    public static double? ExitThreshold(JsonObject body) => Number(body, LoopRptChatClient.ExitThresholdKey) is { } q
        ? q is >= 0 and <= 1 ? q : throw ApiError.BadRequest($"{LoopRptChatClient.ExitThresholdKey} must lie in [0, 1], got {Show(q)}.", LoopRptChatClient.ExitThresholdKey)
        : null;

    public static bool Bool(JsonObject body, string name, string? param = null)
        => body[name] is { } v && v.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False or JsonValueKind.Null => false,
            _ => throw ApiError.BadRequest($"{name} must be true or false.", param ?? name),
        };

    public static List<ChatMessage> Messages(JsonObject body)
    {
        if (body["messages"] is not JsonArray array || array.Count == 0)
            throw ApiError.BadRequest("messages must be a non-empty array of {role, content} objects.", "messages");
        var list = new List<ChatMessage>();
        for (int i = 0; i < array.Count; i++)
        {
            if (array[i] is not JsonObject m) throw ApiError.BadRequest($"messages[{i}] must be an object.", "messages");
            foreach (var (key, value) in m)
            {
                if (RequestFields.MessageFields.Contains(key)) continue;
                bool empty = value is null || value.GetValueKind() == JsonValueKind.Null || value is JsonArray { Count: 0 } || (value.GetValueKind() == JsonValueKind.String && (string)value! == "");
                if (!(empty && RequestFields.MessageNeutral.Contains(key)))
                    throw new ApiError(400, $"messages[{i}].{key} is not supported by LoopRpt's server; a message is read as its role and content.", param: "messages", code: "unsupported_parameter");
            }
            var role = m["role"]?.GetValueKind() == JsonValueKind.String ? (string)m["role"]! : throw ApiError.BadRequest($"messages[{i}].role must be a string.", "messages");
            var chatRole = role switch
            {
                "system" or "developer" => ChatRole.System,
                "user" => ChatRole.User,
                "assistant" => ChatRole.Assistant,
                "tool" => ChatRole.Tool,
                _ => throw ApiError.BadRequest($"messages[{i}].role '{role}' is not one of system, developer, user, assistant, tool.", "messages"),
            };
            list.Add(new ChatMessage(chatRole, Content(m["content"], i)));
        }
        return list;
    }

    private static string Content(JsonNode? content, int i)
    {
        switch (content?.GetValueKind())
        {
            case null or JsonValueKind.Null: return "";
            case JsonValueKind.String: return (string)content!;
            case JsonValueKind.Array:
                return string.Concat(content!.AsArray().Select(part =>
                    part is JsonObject p && p["type"]?.GetValueKind() == JsonValueKind.String && (string?)p["type"] == "text" && p["text"]?.GetValueKind() == JsonValueKind.String ? (string)p["text"]!
                        : throw new ApiError(400, $"messages[{i}].content holds a part that is not text; LoopRpt's server reads text parts only.", param: "messages", code: "unsupported_value")));
            default: throw ApiError.BadRequest($"messages[{i}].content must be a string or an array of text parts.", "messages");
        }
    }

    /// <summary>A string or an array of strings (<c>input</c>, <c>prompt</c>), at most <paramref name="max"/>.</summary>
    public static List<string> Strings(JsonObject body, string name, int max)
    {
        var node = body[name];
        List<string> list = node?.GetValueKind() switch
        {
            JsonValueKind.String => [(string)node!],
            JsonValueKind.Array => node!.AsArray().Select(x => x?.GetValueKind() == JsonValueKind.String ? (string)x!
                : throw ApiError.BadRequest($"{name} must be a string or an array of strings (token arrays are not supported).", name)).ToList(),
            _ => throw ApiError.BadRequest($"{name} must be a string or an array of strings.", name),
        };
        if (list.Count == 0) throw ApiError.BadRequest($"{name} is empty.", name);
        if (list.Count > max) throw ApiError.BadRequest($"{name} holds {list.Count} items; this server accepts at most {max} per request.", name);
        return list;
    }

    /// <summary>A positive integer field (e.g. <c>dimensions</c>), null when absent.</summary>
    public static int? PositiveInt(JsonObject body, string name)
        => Int(body, name) is { } v ? v >= 1 ? v : throw ApiError.BadRequest($"{name} must be at least 1, got {v}.", name) : null;

    private static bool Present(JsonObject body, string name) => body[name] is { } v && v.GetValueKind() != JsonValueKind.Null;

    private static int? Int(JsonObject body, string name)
    {
        if (!Present(body, name)) return null;
        var v = body[name]!;
        return v.GetValueKind() == JsonValueKind.Number && v.AsValue().TryGetValue<int>(out var i) ? i
            : throw ApiError.BadRequest($"{name} must be an integer from {int.MinValue} to {int.MaxValue}, got {v.ToJsonString()}.", name);
    }

    private static double? Number(JsonObject body, string name)
    {
        if (!Present(body, name)) return null;
        var v = body[name]!;
        return v.GetValueKind() == JsonValueKind.Number && v.AsValue().TryGetValue<double>(out var d) && double.IsFinite(d) ? d
            : throw ApiError.BadRequest($"{name} must be a finite number, got {v.ToJsonString()}.", name);
    }

    private static string Show(double v) => v.ToString(CultureInfo.InvariantCulture);
}
