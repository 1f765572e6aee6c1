using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LoopRpt.AI;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;

namespace LoopRpt.Server;

/// <summary>Reads OpenAI request bodies into LoopRpt's options, with 400s that name the offending field.</summary>
internal static class RequestReader
{
    /// <summary>The body as a JSON object, refusing bodies over the limit (413) and anything but an object (400).</summary>
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
        if (buffer.Length == 0) throw ApiError.BadRequest("The request body is empty; expected a JSON object.");
        var node = JsonNode.Parse(buffer.ToArray());
        return node as JsonObject ?? throw ApiError.BadRequest("The request body must be a JSON object.");
    }

    public static void CheckModel(JsonObject body, string modelId)
    {
        if (body["model"] is { } m && (m.GetValueKind() != JsonValueKind.String || (string?)m != modelId))
            throw new ApiError(404, $"The model '{m.ToJsonString().Trim('"')}' does not exist; this server serves '{modelId}'.", param: "model", code: "model_not_found");
    }

    /// <summary>Sampling fields → ChatOptions (max_tokens/max_completion_tokens, temperature, top_p, seed, stop, n, exit_threshold).</summary>
    public static ChatOptions Options(JsonObject body, LoopRptServerOptions server)
    {
        var o = new ChatOptions();
        var max = Int(body, "max_completion_tokens") ?? Int(body, "max_tokens");
        if (max is { } m)
        {
            if (m < 1) throw ApiError.BadRequest($"max_tokens must be at least 1, got {m}.", "max_tokens");
            if (m > server.MaxTokens) throw ApiError.BadRequest($"max_tokens {m} exceeds this server's limit of {server.MaxTokens}.", "max_tokens");
            o.MaxOutputTokens = m;
        }
        else o.MaxOutputTokens = Math.Min(server.MaxTokens, LoopRptChatClientOptions.Defaults.MaxOutputTokens);
        if (Number(body, "temperature") is { } t) o.Temperature = (float)t;
        if (Number(body, "top_p") is { } p) o.TopP = (float)p;
        if (body["seed"] is { } s && s.GetValueKind() != JsonValueKind.Null)
            o.Seed = s.GetValueKind() == JsonValueKind.Number && s.AsValue().TryGetValue<long>(out var seed) ? seed : throw ApiError.BadRequest("seed must be an integer.", "seed");
        if (Int(body, "n") is { } n && n != 1) throw ApiError.BadRequest($"n = {n} is not supported; this server returns one choice (n = 1).", "n");
        if (body["stop"] is { } stop && stop.GetValueKind() != JsonValueKind.Null)
        {
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

    public static double? ExitThreshold(JsonObject body) => Number(body, LoopRptChatClient.ExitThresholdKey) is { } q
        ? q is >= 0 and <= 1 ? q : throw ApiError.BadRequest($"{LoopRptChatClient.ExitThresholdKey} must lie in [0, 1], got {q.ToString(CultureInfo.InvariantCulture)}.", LoopRptChatClient.ExitThresholdKey)
        : null;

    public static bool Bool(JsonObject body, string name)
        => body[name] is { } v && v.GetValueKind() switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False or JsonValueKind.Null => false,
            _ => throw ApiError.BadRequest($"{name} must be true or false.", name),
        };

    public static List<ChatMessage> Messages(JsonObject body)
    {
        if (body["messages"] is not JsonArray array || array.Count == 0)
            throw ApiError.BadRequest("messages must be a non-empty array of {role, content} objects.", "messages");
        var list = new List<ChatMessage>();
        for (int i = 0; i < array.Count; i++)
        {
            if (array[i] is not JsonObject m) throw ApiError.BadRequest($"messages[{i}] must be an object.", "messages");
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
                    part is JsonObject p && (string?)p["type"] == "text" && p["text"]?.GetValueKind() == JsonValueKind.String ? (string)p["text"]!
                        : throw ApiError.BadRequest($"messages[{i}].content holds a part that is not text; this server reads text parts only.", "messages")));
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

    private static int? Int(JsonObject body, string name)
    {
        if (body[name] is not { } v || v.GetValueKind() == JsonValueKind.Null) return null;
        return v.GetValueKind() == JsonValueKind.Number && v.AsValue().TryGetValue<int>(out var i) ? i : throw ApiError.BadRequest($"{name} must be an integer.", name);
    }

    private static double? Number(JsonObject body, string name)
    {
        if (body[name] is not { } v || v.GetValueKind() == JsonValueKind.Null) return null;
        return v.GetValueKind() == JsonValueKind.Number ? v.GetValue<double>() : throw ApiError.BadRequest($"{name} must be a number.", name);
    }
}
