using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoopRpt.MLNet.Persistence;

/// <summary>
/// A LoopRpt state saved as JSON in an ML.NET model (a <c>ValueMapping</c> value): its format name and version, the one
/// JSON setting, and the parse that refuses a foreign or newer format with <see cref="InvalidDataException"/>.
/// </summary>
internal abstract class SavedState
{
    /// <summary>The JSON options of every saved state.</summary>
    protected static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>A new state of <paramref name="format"/>, version <paramref name="version"/> (what this LoopRpt writes).</summary>
    protected SavedState(string format, int version) => (Format, FormatVersion) = (format, version);

    [JsonPropertyName("format")] public string Format { get; set; }
    [JsonPropertyName("format_version")] public int FormatVersion { get; set; }

    public string ToJson() => JsonSerializer.Serialize(this, GetType(), Json);

    /// <summary>
    /// Parses <paramref name="json"/> as a <typeparamref name="T"/> of <paramref name="formatName"/>, versions 1 to
    /// <paramref name="currentVersion"/>; <paramref name="what"/> names the state in messages ("scorer", "tokenizer").
    /// </summary>
    protected static T Parse<T>(string json, string formatName, int currentVersion, string what) where T : SavedState
    {
        T? s;
        try { s = JsonSerializer.Deserialize<T>(json, Json); }
        catch (JsonException e) { throw new InvalidDataException($"The LoopRpt {what} state in the ML.NET model is not valid JSON: {e.Message}", e); }
        if (s is null || s.Format != formatName)
            throw new InvalidDataException($"The ML.NET model holds no LoopRpt {what} state (format '{s?.Format}', expected '{formatName}').");
        if (s.FormatVersion < 1 || s.FormatVersion > currentVersion)
            throw new InvalidDataException($"The LoopRpt {what} state has format_version {s.FormatVersion}; this LoopRpt reads 1 to {currentVersion}. Upgrade LoopRpt to load this model.");
        return s;
    }
}
