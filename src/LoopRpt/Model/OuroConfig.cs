using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace LoopRpt.Model;

/// <summary>
/// Shape of an Ouro looped language model. Property names on the wire are the reference <c>config.json</c>
/// keys (docs/method.md §1), so a released Ouro config deserializes directly and ours loads in Python tools.
/// </summary>
public sealed class OuroConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; set; } = "ouro";
    [JsonPropertyName("architectures")] public string[] Architectures { get; set; } = ["OuroForCausalLM"];
    [JsonPropertyName("vocab_size")] public int VocabSize { get; set; } = 49152;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; set; } = 2048;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; set; } = 5632;
    /// <summary>Physical decoder layers, shared by every loop.</summary>
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; set; } = 24;
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; set; } = 16;
    /// <summary>
    /// Key/value heads; fewer than <see cref="NumAttentionHeads"/> means grouped-query attention. A config.json without the
    /// key gets <see cref="NumAttentionHeads"/> (<see cref="ApplyDerivedDefaults"/>); 16 is only the start of a config built in code.
    /// </summary>
    [JsonPropertyName("num_key_value_heads")] public int NumKeyValueHeads { get; set; } = 16;
    /// <summary>Per-head width; null means hidden_size / num_attention_heads.</summary>
    [JsonPropertyName("head_dim")] public int? HeadDimOverride { get; set; }
    /// <summary>Number of loops T through the shared layers (Ouro's recurrent steps).</summary>
    [JsonPropertyName("total_ut_steps")] public int TotalUtSteps { get; set; } = 4;
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; set; } = 1_000_000.0;
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; set; } = 1e-6;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; set; } = 4096;
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; set; }
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; set; } = "silu";
    /// <summary>Std of the normal initializer for linear and embedding weights.</summary>
    [JsonPropertyName("initializer_range")] public double InitializerRange { get; set; } = 0.02;
    /// <summary>Default Q-exit threshold stored with the model (null: use the caller's).</summary>
    [JsonPropertyName("early_exit_threshold")] public double? EarlyExitThreshold { get; set; }
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; set; }
    [JsonPropertyName("eos_token_id")] public int? EosTokenId { get; set; }
    [JsonPropertyName("pad_token_id")] public int? PadTokenId { get; set; }
    [JsonPropertyName("torch_dtype")] public string? TorchDtype { get; set; }

    /// <summary>Unknown keys of a reference config are kept so a load → save round trip loses nothing.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; set; }

    [JsonIgnore] public int HeadDim => HeadDimOverride ?? (NumAttentionHeads > 0 ? HiddenSize / NumAttentionHeads : 0);

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first impossible field.</summary>
    public OuroConfig Validate()
    {
        static void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentOutOfRangeException(name, v, $"{name} must be at least 1.");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (TotalUtSteps < 1)
            throw new ArgumentOutOfRangeException("total_ut_steps", TotalUtSteps, "total_ut_steps (loops) must be at least 1.");
        if (HeadDimOverride is null && HiddenSize % NumAttentionHeads != 0)
            throw new ArgumentOutOfRangeException("num_attention_heads", NumAttentionHeads,
                $"num_attention_heads ({NumAttentionHeads}) must divide hidden_size ({HiddenSize}) when head_dim is not given.");
        if (HeadDim < 2 || HeadDim % 2 != 0)
            throw new ArgumentOutOfRangeException("head_dim", HeadDim, "head_dim must be a positive even number (RoPE rotates pairs).");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new ArgumentOutOfRangeException("num_key_value_heads", NumKeyValueHeads,
                $"num_key_value_heads ({NumKeyValueHeads}) must divide num_attention_heads ({NumAttentionHeads}).");
        if (!(RopeTheta > 0)) throw new ArgumentOutOfRangeException("rope_theta", RopeTheta, "rope_theta must be positive.");
        if (!(RmsNormEps > 0)) throw new ArgumentOutOfRangeException("rms_norm_eps", RmsNormEps, "rms_norm_eps must be positive.");
        if (!(InitializerRange > 0)) throw new ArgumentOutOfRangeException("initializer_range", InitializerRange, "initializer_range must be positive.");
        if (!string.Equals(HiddenAct, "silu", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentOutOfRangeException("hidden_act", HiddenAct, "Only hidden_act = 'silu' (SwiGLU) is supported.");
        if (EarlyExitThreshold is { } q && !(q >= 0 && q <= 1))
            throw new ArgumentOutOfRangeException("early_exit_threshold", q, "early_exit_threshold must lie in [0, 1].");
        foreach (var (name, id) in new[] { ("bos_token_id", BosTokenId), ("eos_token_id", EosTokenId), ("pad_token_id", PadTokenId) })
            if (id is { } v && (v < 0 || v >= VocabSize))
                throw new ArgumentOutOfRangeException(name, v, $"{name} must lie in [0, vocab_size = {VocabSize}).");
        return this;
    }

    public OuroConfig Clone() => FromJson(ToJson());

    /// <summary>
    /// Keys a <c>config.json</c> on disk must give: the model's shape has no sensible default (a silent default would only
    /// fail later on a tensor shape). <see cref="FromJson"/> itself keeps the defaults for partial configs built in code.
    /// </summary>
    public static IReadOnlyList<string> RequiredKeys { get; } = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"];

    /// <summary>Throws <see cref="InvalidDataException"/> naming the first of <see cref="RequiredKeys"/> that <paramref name="root"/> lacks (or sets to null).</summary>
    public static void CheckRequiredKeys(JsonObject root, string source)
    {
        ArgumentNullException.ThrowIfNull(root);
        foreach (var key in RequiredKeys)
            if (root[key] is null)
                throw new InvalidDataException($"'{source}' lacks the required key '{key}' (a model config needs {string.Join(", ", RequiredKeys)}).");
    }

    /// <summary>
    /// Fills the keys a <c>config.json</c> may omit whose default depends on other keys, as the Hugging Face configs of
    /// Ouro's family (Llama, Qwen2) do: <c>num_key_value_heads</c> absent or null means <c>num_attention_heads</c> (plain
    /// multi-head attention, no grouping), not the 16 a config built in code starts from. Call after <see cref="CheckRequiredKeys"/>.
    /// </summary>
    public static void ApplyDerivedDefaults(JsonObject root)
    {
        ArgumentNullException.ThrowIfNull(root);
        if (root["num_key_value_heads"] is null && root["num_attention_heads"] is { } heads) root["num_key_value_heads"] = heads.DeepClone();
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Parses a config; the result is validated.</summary>
    public static OuroConfig FromJson(string json)
    {
        var config = JsonSerializer.Deserialize<OuroConfig>(json, JsonOptions)
            ?? throw new FormatException("config.json is empty (the JSON literal null).");
        return config.Validate();
    }

    // ---- Presets ------------------------------------------------------------------------------------------

    /// <summary>Ouro-1.4B shape: 24 layers, hidden 2048, FFN 5632, 16 heads of 128, vocab 49152, 4 loops.</summary>
    public static OuroConfig Ouro1_4B() => new()
    {
        VocabSize = 49152, HiddenSize = 2048, IntermediateSize = 5632, NumHiddenLayers = 24,
        NumAttentionHeads = 16, NumKeyValueHeads = 16, HeadDimOverride = 128, TotalUtSteps = 4,
        RopeTheta = 1_000_000, RmsNormEps = 1e-6, MaxPositionEmbeddings = 65536, BosTokenId = 1, EosTokenId = 2,
    };

    /// <summary>Ouro-2.6B shape: as 1.4B with 48 layers.</summary>
    public static OuroConfig Ouro2_6B()
    {
        var c = Ouro1_4B();
        c.NumHiddenLayers = 48;
        return c;
    }

    /// <summary>About 0.5M parameters at vocab 512: unit tests and the QuickStart on two CPU cores.</summary>
    public static OuroConfig Tiny(int vocabSize = 512) => new()
    {
        VocabSize = vocabSize, HiddenSize = 64, IntermediateSize = 176, NumHiddenLayers = 2,
        NumAttentionHeads = 4, NumKeyValueHeads = 2, TotalUtSteps = 4, RopeTheta = 10_000, MaxPositionEmbeddings = 1024,
    };

    /// <summary>The benchmark config: hidden 256, 2 layers, 4 loops, vocab 4096 (about 3.4M parameters).</summary>
    public static OuroConfig Small(int vocabSize = 4096) => new()
    {
        VocabSize = vocabSize, HiddenSize = 256, IntermediateSize = 688, NumHiddenLayers = 2,
        NumAttentionHeads = 4, NumKeyValueHeads = 4, TotalUtSteps = 4, RopeTheta = 10_000, MaxPositionEmbeddings = 2048,
    };

    /// <summary>Named presets: tiny, small, ouro-1.4b, ouro-2.6b.</summary>
    public static OuroConfig FromPreset(string name, int? vocabSize = null)
    {
        var c = name.ToLowerInvariant() switch
        {
            "tiny" => Tiny(),
            "small" => Small(),
            "ouro-1.4b" or "ouro1.4b" => Ouro1_4B(),
            "ouro-2.6b" or "ouro2.6b" => Ouro2_6B(),
            _ => throw new ArgumentOutOfRangeException(nameof(name), name, "Unknown model preset; expected one of: tiny, small, ouro-1.4b, ouro-2.6b."),
        };
        if (vocabSize is { } v) c.VocabSize = v;
        return c.Validate();
    }

    /// <summary>Parameter count (embedding and LM head counted separately unless tied).</summary>
    public long ParameterCount()
    {
        long h = HiddenSize, d = HeadDim;
        long attn = h * NumAttentionHeads * d * 2 + h * NumKeyValueHeads * d * 2;
        long mlp = 3 * h * IntermediateSize;
        long layer = attn + mlp + 4 * h;
        long embed = (long)VocabSize * h;
        return embed + (TieWordEmbeddings ? 0 : embed) + NumHiddenLayers * layer + h + h + 1;
    }

    /// <summary>
    /// Training FLOPs per token (forward + backward = 3 × forward), counting matrix multiplies only:
    /// T loops × layers × (projections + MLP + attention scores/values at sequence length S, causal half
    /// not discounted, as nanoGPT's estimate), plus the LM head at every loop step (the Stage I loss reads out every step).
    /// </summary>
    public double TrainingFlopsPerToken(int seqLen, int lmHeadReadouts = -1)
    {
        double h = HiddenSize, d = HeadDim;
        double proj = 2 * (h * NumAttentionHeads * d * 2 + h * NumKeyValueHeads * d * 2);
        double mlp = 2 * 3 * h * IntermediateSize;
        double attn = 2 * 2 * seqLen * NumAttentionHeads * d;
        double perLoop = NumHiddenLayers * (proj + mlp + attn);
        int readouts = lmHeadReadouts < 0 ? TotalUtSteps : lmHeadReadouts;
        double head = 2 * h * VocabSize * readouts;
        return 3 * (TotalUtSteps * perLoop + head);
    }
}
