using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Interop;

/// <summary>One stored tensor as raw bytes.</summary>
internal sealed record RawTensor(string DType, long[] Shape, byte[] Data);

/// <summary>
/// Test-side implementation of the HF checkpoint layout, written from the format description and independent of the
/// library's reader/writer: a safetensors writer/parser, the reference key list, a reference-style config.json and a
/// byte-level BPE tokenizer.json.
/// </summary>
internal static class ReferenceLayout
{
    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "looprpt-interop-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>The tiny shape used by the interop tests: head_dim (16) differs from hidden/heads (8), GQA, 3 loops.</summary>
    public static OuroConfig TinyConfig(bool tie = false) => new()
    {
        VocabSize = 272, HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4,
        NumKeyValueHeads = 2, HeadDimOverride = 16, TotalUtSteps = 3, RopeTheta = 10000, RmsNormEps = 1e-6,
        MaxPositionEmbeddings = 128, TieWordEmbeddings = tie, EarlyExitThreshold = 0.6, BosTokenId = 0, EosTokenId = 0,
    };

    /// <summary>A config.json as released Ouro checkpoints write it (extra keys, bos = eos = 0).</summary>
    public static string ConfigJson(bool tie = false, string extra = "") => $$"""
    {
      "architectures": ["OuroForCausalLM"],
      "attention_bias": false,
      "attention_dropout": 0.0,
      "auto_map": {"AutoConfig": "configuration_ouro.OuroConfig", "AutoModelForCausalLM": "modeling_ouro.OuroForCausalLM"},
      "bos_token_id": 0,
      "eos_token_id": 0,
      "early_exit_threshold": 0.6,
      "head_dim": 16,
      "hidden_act": "silu",
      "hidden_size": 32,
      "initializer_range": 0.02,
      "intermediate_size": 48,
      "layer_types": ["full_attention", "full_attention"],
      "max_position_embeddings": 128,
      "max_window_layers": 2,
      "model_type": "ouro",
      "num_attention_heads": 4,
      "num_hidden_layers": 2,
      "num_key_value_heads": 2,
      "rms_norm_eps": 1e-06,
      "rope_scaling": null,
      "rope_theta": 10000.0,
      "sliding_window": null,
      "tie_word_embeddings": {{(tie ? "true" : "false")}},
      "torch_dtype": "bfloat16",
      "total_ut_steps": 3,
      "transformers_version": "4.55.0",
      "use_cache": true,
      {{extra}}
      "use_sliding_window": false,
      "vocab_size": 272
    }
    """;

    /// <summary>The reference checkpoint keys and shapes, spelled out from the reference modeling code.</summary>
    public static List<(string Name, long[] Shape)> ReferenceKeys(OuroConfig c)
    {
        long h = c.HiddenSize, d = c.HeadDimOverride ?? c.HiddenSize / c.NumAttentionHeads, i = c.IntermediateSize, v = c.VocabSize;
        var keys = new List<(string, long[])> { ("model.embed_tokens.weight", [v, h]) };
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var p = $"model.layers.{l}.";
            keys.Add((p + "self_attn.q_proj.weight", [c.NumAttentionHeads * d, h]));
            keys.Add((p + "self_attn.k_proj.weight", [c.NumKeyValueHeads * d, h]));
            keys.Add((p + "self_attn.v_proj.weight", [c.NumKeyValueHeads * d, h]));
            keys.Add((p + "self_attn.o_proj.weight", [h, c.NumAttentionHeads * d]));
            keys.Add((p + "mlp.gate_proj.weight", [i, h]));
            keys.Add((p + "mlp.up_proj.weight", [i, h]));
            keys.Add((p + "mlp.down_proj.weight", [h, i]));
            foreach (var n in new[] { "input_layernorm", "input_layernorm_2", "post_attention_layernorm", "post_attention_layernorm_2" })
                keys.Add((p + n + ".weight", [h]));
        }
        keys.Add(("model.norm.weight", [h]));
        keys.Add(("model.early_exit_gate.weight", [1, h]));
        keys.Add(("model.early_exit_gate.bias", [1]));
        if (!c.TieWordEmbeddings) keys.Add(("lm_head.weight", [v, h]));
        return keys;
    }

    /// <summary>A model whose every parameter (norms and biases included) is random, so a wrong mapping shows in the logits.</summary>
    public static OuroForCausalLM RandomModel(OuroConfig c, ulong seed)
    {
        using var g = new Generator(seed);
        var lm = new OuroForCausalLM(c, generator: g);
        using var noGrad = no_grad();
        foreach (var (_, p) in lm.UniqueParameters())
        {
            using var scope = NewDisposeScope();
            p.add_(randn(p.shape, generator: g) * 0.2);
        }
        return lm;
    }

    /// <summary>The model's tensors under the reference keys, stored as <paramref name="dtype"/> (F32, BF16, F16).</summary>
    public static Dictionary<string, RawTensor> StoredTensors(OuroForCausalLM lm, string dtype)
    {
        var st = dtype switch { "F32" => ScalarType.Float32, "BF16" => ScalarType.BFloat16, "F16" => ScalarType.Float16, _ => throw new ArgumentException(dtype) };
        var state = lm.state_dict();
        var result = new Dictionary<string, RawTensor>();
        foreach (var (name, shape) in ReferenceKeys(lm.Config))
        {
            Assert.True(state.ContainsKey(name), $"model has no parameter '{name}'");
            Assert.Equal(shape, state[name].shape);
            using var scope = NewDisposeScope();
            result[name] = new RawTensor(dtype, shape, state[name].detach().to_type(st).cpu().contiguous().bytes.ToArray());
        }
        return result;
    }

    /// <summary>Writes a safetensors file as the Python writer does: keys sorted, header padded with spaces to 8 bytes.</summary>
    public static void WriteSafeTensors(string path, IEnumerable<KeyValuePair<string, RawTensor>> tensors)
    {
        var list = tensors.OrderBy(t => t.Key, StringComparer.Ordinal).ToList();
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        foreach (var (name, t) in list)
        {
            header[name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray(t.Shape.Select(s => (JsonNode)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.Data.Length),
            };
            offset += t.Data.Length;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var fs = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        fs.Write(len);
        fs.Write(json);
        for (int i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
        foreach (var (_, t) in list) fs.Write(t.Data);
    }

    /// <summary>Parses a safetensors file into raw tensors.</summary>
    public static Dictionary<string, RawTensor> ReadSafeTensors(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        var result = new Dictionary<string, RawTensor>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            var off = p.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            result[p.Name] = new RawTensor(p.Value.GetProperty("dtype").GetString()!,
                p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray(),
                bytes.AsSpan((int)(8 + n + off[0]), (int)(off[1] - off[0])).ToArray());
        }
        return result;
    }

    /// <summary>
    /// Writes a checkpoint directory in the reference layout: config.json, weights (single file, or <paramref name="shards"/>
    /// files named model-0000i-of-0000n.safetensors plus the index), and optionally tokenizer.json.
    /// </summary>
    public static void WriteCheckpoint(string dir, Dictionary<string, RawTensor> tensors, string configJson, int shards = 1, bool tokenizer = true)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{"bos_token_id": 0, "eos_token_id": 0, "transformers_version": "4.55.0"}""");
        File.WriteAllText(Path.Combine(dir, "modeling_ouro.py"), "# remote code placeholder\n");
        if (tokenizer) File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TokenizerJson());
        if (shards == 1)
        {
            WriteSafeTensors(Path.Combine(dir, "model.safetensors"), tensors);
            return;
        }
        var names = tensors.Keys.ToList();
        var map = new JsonObject();
        long total = 0;
        for (int s = 0; s < shards; s++)
        {
            var file = $"model-{s + 1:D5}-of-{shards:D5}.safetensors";
            var part = names.Where((_, i) => i * shards / names.Count == s).ToList();
            WriteSafeTensors(Path.Combine(dir, file), part.Select(k => KeyValuePair.Create(k, tensors[k])));
            foreach (var k in part) map[k] = file;
            total += part.Sum(k => (long)tensors[k].Data.Length);
        }
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = map };
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), index.ToJsonString());
    }

    // ---- tokenizer.json ---------------------------------------------------------------------------------

    /// <summary>GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    public static char[] ByteToUnicode()
    {
        var bs = new List<int>();
        for (int b = '!'; b <= '~'; b++) bs.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) bs.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) bs.Add(b);
        var map = new char[256];
        foreach (var b in bs) map[b] = (char)b;
        int n = 0;
        for (int b = 0; b < 256; b++)
            if (!bs.Contains(b)) map[b] = (char)(256 + n++);
        return map;
    }

    public static readonly string[] Specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

    public static readonly string[] Merges = ["h e", "l l", "he ll", "Ġ w", "o r", "Ġw or", "2 0"];

    /// <summary>Vocabulary: the 3 special tokens (0..2), the 256 byte symbols in byte order (3..258), then one token per merge.</summary>
    public static Dictionary<string, int> Vocab()
    {
        var vocab = new Dictionary<string, int>();
        foreach (var s in Specials) vocab[s] = vocab.Count;
        foreach (var c in ByteToUnicode()) vocab[c.ToString()] = vocab.Count;
        foreach (var m in Merges) vocab[m.Replace(" ", "")] = vocab.Count;
        return vocab;
    }

    /// <summary>A SmolLM/Ouro-style tokenizer.json: Digits + ByteLevel pre-tokenizer, merges as pairs.</summary>
    public static string TokenizerJson()
    {
        var added = new JsonArray(Specials.Select((s, i) => (JsonNode)new JsonObject
        {
            ["id"] = i, ["content"] = s, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        }).ToArray());
        var vocab = new JsonObject(Vocab().Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
        var root = new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added, ["normalizer"] = null,
            ["pre_tokenizer"] = JsonNode.Parse("""
                {"type": "Sequence", "pretokenizers": [
                  {"type": "Digits", "individual_digits": true},
                  {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}
                """),
            ["post_processor"] = JsonNode.Parse("""{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}"""),
            ["decoder"] = JsonNode.Parse("""{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}"""),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false, ["vocab"] = vocab,
                ["merges"] = new JsonArray(Merges.Select(m => (JsonNode)new JsonArray(m.Split(' ')[0], m.Split(' ')[1])).ToArray()),
            },
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}
