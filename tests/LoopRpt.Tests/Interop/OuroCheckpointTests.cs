using LoopRpt.Checkpoints;
using System.Text.Json.Nodes;
using LoopRpt.Interop;
using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Interop;

public sealed class OuroCheckpointTests : IDisposable
{
    private readonly string _root;

    public OuroCheckpointTests()
    {
        TestUtil.TinyModel(vocab: 8).Dispose(); // loads the native library
        _root = ReferenceLayout.TempDir();
    }

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    /// <summary>Per-step logits (T, S, V) and gate logits of a model on fixed ids, float32 on the CPU.</summary>
    private static (float[] Logits, float[] Gates) Outputs(OuroForCausalLM lm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        lm.eval();
        var ids = TestUtil.RandomIds(2, 9, lm.Config.VocabSize, seed: 5);
        var o = lm.Forward(ids);
        var logits = stack(o.Hidden.Select(h => lm.Logits(h)).ToArray(), 0);
        return (TestUtil.ToArray(logits), TestUtil.ToArray(o.GateLogits));
    }

    /// <summary>The same model with every parameter rounded through the stored dtype, as a checkpoint in that dtype holds it.</summary>
    private static OuroForCausalLM Rounded(OuroForCausalLM source, ScalarType stored)
    {
        var copy = ReferenceLayout.RandomModel(source.Config, 99);
        using var noGrad = no_grad();
        var src = source.state_dict();
        foreach (var (name, p) in copy.UniqueParameters())
        {
            using var scope = NewDisposeScope();
            p.copy_(src[name].to_type(stored).to_type(ScalarType.Float32));
        }
        return copy;
    }

    [Theory]
    [InlineData("F32", 1)]
    [InlineData("BF16", 1)]
    [InlineData("F16", 3)]
    [InlineData("BF16", 4)]
    public void LoadedReferenceCheckpointGivesTheSameLogitsAsTheInMemoryModel(string dtype, int shards)
    {
        using var source = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 7);
        var dir = Path.Combine(_root, "ref");
        ReferenceLayout.WriteCheckpoint(dir, ReferenceLayout.StoredTensors(source, dtype), ReferenceLayout.ConfigJson(), shards);

        using var loaded = OuroCheckpoint.Load(dir);
        Assert.Equal(dtype, loaded.StoredDType);
        Assert.Equal(shards, loaded.WeightFiles.Count);
        Assert.Equal(ScalarType.Float32, loaded.Model.DType);

        using var expectedModel = dtype == "F32" ? Rounded(source, ScalarType.Float32)
            : Rounded(source, dtype == "BF16" ? ScalarType.BFloat16 : ScalarType.Float16);
        var (expected, expectedGates) = Outputs(expectedModel);
        var (actual, actualGates) = Outputs(loaded.Model);
        Assert.Equal(expected, actual);           // bitwise: same weights, same code, same shapes
        // bitwise: same weights, same code, same shapes
        Assert.Equal(expectedGates, actualGates);

        if (dtype == "F32")
        {
            // And the original model itself (no rounding at all).
            // bitwise: float32 weights stored and loaded unchanged: the same computation
            Assert.Equal(Outputs(source).Logits, actual);
        }
    }

    [Fact]
    public void ConfigMapsTheReferenceKeys()
    {
        var path = Path.Combine(_root, "config.json");
        File.WriteAllText(path, ReferenceLayout.ConfigJson());
        var c = ModelDirectory.ReadConfig(_root);
        Assert.Equal(3, c.TotalUtSteps);
        Assert.Equal(16, c.HeadDim);
        Assert.Equal(2, c.NumKeyValueHeads);
        Assert.Equal(4, c.NumAttentionHeads);
        // bitwise: a config value parsed from JSON text, not computed
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal(0.6, c.EarlyExitThreshold);
        Assert.Equal(272, c.VocabSize);
        Assert.Equal(48, c.IntermediateSize);
        Assert.Equal("bfloat16", c.TorchDtype);
        Assert.NotNull(c.Extra);
        Assert.True(c.Extra!.ContainsKey("layer_types"));
        Assert.True(c.Extra.ContainsKey("auto_map"));
    }

    [Fact]
    public void ListValuedEosTakesTheFirstIdWithAWarning()
    {
        var path = Path.Combine(_root, "config.json");
        File.WriteAllText(path, ReferenceLayout.ConfigJson().Replace("\"eos_token_id\": 0", "\"eos_token_id\": [2, 0]"));
        var warnings = new List<string>();
        var c = ModelDirectory.ReadConfig(_root, warnings.Add);
        Assert.Equal(2, c.EosTokenId);
        Assert.Contains(warnings, w => w.Contains("eos_token_id") && w.Contains("[2,0]"));
    }

    [Theory]
    [InlineData("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", "rope_scaling")]
    [InlineData("\"attention_bias\": false", "\"attention_bias\": true", "attention_bias")]
    [InlineData("\"use_sliding_window\": false", "\"use_sliding_window\": true", "use_sliding_window")]
    public void UnsupportedConfigFeaturesAreRefusedByName(string from, string to, string key)
    {
        var path = Path.Combine(_root, "config.json");
        File.WriteAllText(path, ReferenceLayout.ConfigJson().Replace(from, to));
        var e = Assert.Throws<NotSupportedException>(() => ModelDirectory.ReadConfig(_root));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void ImpossibleConfigNamesTheFileAndKey()
    {
        var path = Path.Combine(_root, "config.json");
        File.WriteAllText(path, ReferenceLayout.ConfigJson().Replace("\"total_ut_steps\": 3", "\"total_ut_steps\": 0"));
        var e = Assert.Throws<InvalidDataException>(() => ModelDirectory.ReadConfig(_root));
        Assert.Contains("total_ut_steps", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Theory]
    [InlineData("F32", 1, null)]
    [InlineData("BF16", 3, null)]
    [InlineData("F16", 1, null)]
    [InlineData("BF16", 1, 3000L)]
    public void LoadThenSaveKeepsEveryTensorByteIdentical(string dtype, int shards, long? maxShardBytes)
    {
        using var source = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 11);
        var stored = ReferenceLayout.StoredTensors(source, dtype);
        var dir = Path.Combine(_root, "ref");
        ReferenceLayout.WriteCheckpoint(dir, stored, ReferenceLayout.ConfigJson(), shards);

        var saved = Path.Combine(_root, "saved");
        using (var loaded = OuroCheckpoint.Load(dir))
        {
            var st = dtype switch { "F32" => ScalarType.Float32, "BF16" => ScalarType.BFloat16, _ => ScalarType.Float16 };
            loaded.Save(saved, new OuroSaveOptions { DType = st, MaxShardBytes = maxShardBytes ?? OuroSaveOptions.Defaults.MaxShardBytes });
        }

        var back = new Dictionary<string, RawTensor>();
        var index = Path.Combine(saved, OuroCheckpoint.IndexFileName);
        if (maxShardBytes is null)
        {
            Assert.False(File.Exists(index));
            back = ReferenceLayout.ReadSafeTensors(Path.Combine(saved, "model.safetensors"));
        }
        else
        {
            var root = JsonNode.Parse(File.ReadAllText(index))!;
            var map = root["weight_map"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<string>());
            var files = map.Values.Distinct().Order().ToList();
            Assert.True(files.Count > 1);
            Assert.Equal(Enumerable.Range(1, files.Count).Select(i => $"model-{i:D5}-of-{files.Count:D5}.safetensors"), files);
            foreach (var f in files)
            {
                var shard = ReferenceLayout.ReadSafeTensors(Path.Combine(saved, f));
                Assert.True(shard.Values.Sum(t => (long)t.Data.Length) <= maxShardBytes || shard.Count == 1);
                foreach (var (k, t) in shard)
                {
                    Assert.Equal(f, map[k]);
                    back.Add(k, t);
                }
            }
            Assert.Equal(back.Values.Sum(t => (long)t.Data.Length), root["metadata"]!["total_size"]!.GetValue<long>());
            Assert.Equal(back.Keys.Order(), map.Keys.Order());
        }

        Assert.Equal(stored.Keys.Order(), back.Keys.Order());
        foreach (var (k, t) in stored)
        {
            Assert.Equal(t.DType, back[k].DType);
            Assert.Equal(t.Shape, back[k].Shape);
            Assert.True(t.Data.AsSpan().SequenceEqual(back[k].Data), $"tensor '{k}' differs after load → save");
        }

        // config.json: reference keys and the unknown ones survive; the side files travel along.
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, "config.json")))!;
        Assert.Equal("ouro", config["model_type"]!.GetValue<string>());
        Assert.Equal("OuroForCausalLM", config["architectures"]![0]!.GetValue<string>());
        Assert.Equal(dtype switch { "F32" => "float32", "BF16" => "bfloat16", _ => "float16" }, config["torch_dtype"]!.GetValue<string>());
        Assert.Equal(3, config["total_ut_steps"]!.GetValue<int>());
        Assert.Equal(16, config["head_dim"]!.GetValue<int>());
        // bitwise: a config value written and parsed back, not computed
        Assert.Equal(0.6, config["early_exit_threshold"]!.GetValue<double>());
        Assert.Equal("full_attention", config["layer_types"]![0]!.GetValue<string>());
        Assert.NotNull(config["auto_map"]);
        Assert.True(File.Exists(Path.Combine(saved, "modeling_ouro.py")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "tokenizer.json")), File.ReadAllBytes(Path.Combine(saved, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(saved, "generation_config.json")));
    }

    [Fact]
    public void Bf16LoadCreatesBf16ParametersAndSavesBackIdentically()
    {
        using var source = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 13);
        var stored = ReferenceLayout.StoredTensors(source, "BF16");
        var dir = Path.Combine(_root, "ref");
        ReferenceLayout.WriteCheckpoint(dir, stored, ReferenceLayout.ConfigJson(), shards: 2);
        var saved = Path.Combine(_root, "saved");
        using (var loaded = OuroCheckpoint.Load(dir, new OuroLoadOptions { DType = ScalarType.BFloat16 }))
        {
            Assert.All(loaded.Model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
            // The bf16 model computes close to the f32 model on the same (bf16-valued) weights.
            using var reference = Rounded(source, ScalarType.BFloat16);
            var (expected, _) = Outputs(reference);
            var (actual, _) = Outputs(loaded.Model);
            double maxDiff = expected.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
            double scale = expected.Max(Math.Abs);
            Assert.True(maxDiff < 0.05 * scale, $"bf16 logits differ by {maxDiff} (scale {scale})");
            loaded.Save(saved); // default dtype: the model's, bfloat16
        }
        var back = ReferenceLayout.ReadSafeTensors(Path.Combine(saved, "model.safetensors"));
        foreach (var (k, t) in stored) Assert.True(t.Data.AsSpan().SequenceEqual(back[k].Data), $"tensor '{k}' differs");
    }

    [Fact]
    public void TiedEmbeddingsLoadWithoutLmHeadAndSaveWithoutIt()
    {
        var config = ReferenceLayout.TinyConfig(tie: true);
        using var source = ReferenceLayout.RandomModel(config, 17);
        var stored = ReferenceLayout.StoredTensors(source, "F32");
        Assert.False(stored.ContainsKey("lm_head.weight"));
        var dir = Path.Combine(_root, "ref");
        ReferenceLayout.WriteCheckpoint(dir, stored, ReferenceLayout.ConfigJson(tie: true));
        using var loaded = OuroCheckpoint.Load(dir);
        Assert.True(loaded.Config.TieWordEmbeddings);
        // bitwise: save -> load reads the same bytes: the same computation
        Assert.Equal(Outputs(source).Logits, Outputs(loaded.Model).Logits);
        var saved = Path.Combine(_root, "saved");
        loaded.Save(saved);
        Assert.False(ReferenceLayout.ReadSafeTensors(Path.Combine(saved, "model.safetensors")).ContainsKey("lm_head.weight"));
    }

    // ---- Errors -------------------------------------------------------------------------------------------

    private string WriteBroken(Action<Dictionary<string, RawTensor>> edit, int shards = 1)
    {
        using var source = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 3);
        var stored = ReferenceLayout.StoredTensors(source, "F32");
        edit(stored);
        var dir = Path.Combine(_root, "broken");
        ReferenceLayout.WriteCheckpoint(dir, stored, ReferenceLayout.ConfigJson(), shards, tokenizer: false);
        return dir;
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        var dir = WriteBroken(t => t.Remove("model.layers.1.mlp.up_proj.weight"));
        var e = Assert.Throws<InvalidDataException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains("model.layers.1.mlp.up_proj.weight", e.Message);
    }

    [Fact]
    public void ExtraTensorIsNamed()
    {
        var dir = WriteBroken(t => t["model.layers.0.self_attn.q_proj.bias"] = new RawTensor("F32", [64], new byte[256]));
        var e = Assert.Throws<InvalidDataException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains("model.layers.0.self_attn.q_proj.bias", e.Message);
    }

    [Fact]
    public void MisShapedTensorIsNamedWithBothShapes()
    {
        var dir = WriteBroken(t => t["model.layers.0.self_attn.k_proj.weight"] = new RawTensor("F32", [16, 32], new byte[16 * 32 * 4]));
        var e = Assert.Throws<InvalidDataException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains("model.layers.0.self_attn.k_proj.weight", e.Message);
        Assert.Contains("[16, 32]", e.Message);
        Assert.Contains("[32, 32]", e.Message);
    }

    [Fact]
    public void TruncatedFileIsReportedWithItsPath()
    {
        var dir = WriteBroken(_ => { });
        var file = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<InvalidDataException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains(file, e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void CorruptHeaderIsReportedWithItsPath()
    {
        var dir = WriteBroken(_ => { });
        var file = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        bytes[8] = (byte)'#'; // the header's opening brace
        File.WriteAllBytes(file, bytes);
        var e = Assert.Throws<InvalidDataException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains(file, e.Message);
        Assert.Contains("JSON", e.Message);
    }

    [Fact]
    public void IndexNamingAMissingShardFails()
    {
        var dir = WriteBroken(_ => { }, shards: 2);
        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        var e = Assert.Throws<FileNotFoundException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void IndexDisagreeingWithTheShardsNamesTheKey()
    {
        var dir = WriteBroken(_ => { }, shards: 2);
        var indexPath = Path.Combine(dir, OuroCheckpoint.IndexFileName);
        var index = JsonNode.Parse(File.ReadAllText(indexPath))!;
        index["weight_map"]!["model.norm.weight"] = "model-00001-of-00002.safetensors";  // it is in shard 2
        File.WriteAllText(indexPath, index.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains("model.norm.weight", e.Message);
    }

    [Fact]
    public void DirectoryWithoutWeightsSaysWhatIsMissing()
    {
        var dir = Path.Combine(_root, "empty");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), ReferenceLayout.ConfigJson());
        var e = Assert.Throws<FileNotFoundException>(() => OuroCheckpoint.Load(dir));
        Assert.Contains("model.safetensors", e.Message);
        Assert.False(OuroCheckpoint.IsCheckpointDirectory(dir));
        var noConfig = Path.Combine(_root, "noconfig");
        Directory.CreateDirectory(noConfig);
        Assert.Contains("config.json", Assert.Throws<FileNotFoundException>(() => OuroCheckpoint.Load(noConfig)).Message);
    }

    [Fact]
    public void BadOptionsAreRejectedByName()
    {
        using var source = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 3);
        var dir = Path.Combine(_root, "ok");
        ReferenceLayout.WriteCheckpoint(dir, ReferenceLayout.StoredTensors(source, "F32"), ReferenceLayout.ConfigJson());
        Assert.Contains("DType", Assert.Throws<ArgumentOutOfRangeException>(() => OuroCheckpoint.Load(dir, new OuroLoadOptions { DType = ScalarType.Int64 })).Message);
        Assert.Contains("EosTokenId", Assert.Throws<ArgumentOutOfRangeException>(() => OuroCheckpoint.Load(dir, new OuroLoadOptions { EosTokenId = 272 })).Message);
        Assert.Contains("MaxShardBytes", Assert.Throws<ArgumentOutOfRangeException>(
            () => OuroCheckpoint.Save(source, Path.Combine(_root, "x"), new OuroSaveOptions { MaxShardBytes = 0 })).Message);
    }

    // ---- BOS / EOS ----------------------------------------------------------------------------------------

    [Fact]
    public void WrongBosEosIsDetectedAndKeptUnlessOverridden()
    {
        using var source = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 3);
        var dir = Path.Combine(_root, "ref");
        ReferenceLayout.WriteCheckpoint(dir, ReferenceLayout.StoredTensors(source, "F32"), ReferenceLayout.ConfigJson());

        var seen = new List<string>();
        using (var plain = OuroCheckpoint.Load(dir, new OuroLoadOptions { OnWarning = seen.Add }))
        {
            var warning = Assert.Single(plain.Warnings);
            Assert.Equal(warning, Assert.Single(seen));
            Assert.Contains("<|im_start|> = 1", warning);
            Assert.Contains("<|im_end|> = 2", warning);
            Assert.Equal(0, plain.Config.BosTokenId);
            Assert.Equal(0, plain.Config.EosTokenId);
        }

        using (var fixedIds = OuroCheckpoint.Load(dir, new OuroLoadOptions { UseChatMlSpecialTokens = true }))
        {
            Assert.Equal(1, fixedIds.Config.BosTokenId);
            Assert.Equal(2, fixedIds.Config.EosTokenId);
            var saved = Path.Combine(_root, "saved");
            fixedIds.Save(saved);
            var generation = JsonNode.Parse(File.ReadAllText(Path.Combine(saved, "generation_config.json")))!;
            Assert.Equal(1, generation["bos_token_id"]!.GetValue<int>());
            Assert.Equal(2, generation["eos_token_id"]!.GetValue<int>());
            Assert.Equal("4.55.0", generation["transformers_version"]!.GetValue<string>());
            using var again = OuroCheckpoint.Load(saved);
            Assert.Empty(again.Warnings);
            Assert.Equal(2, again.Config.EosTokenId);
        }

        using (var overridden = OuroCheckpoint.Load(dir, new OuroLoadOptions { BosTokenId = 5, EosTokenId = 6 }))
        {
            Assert.Empty(overridden.Warnings);
            Assert.Equal(5, overridden.Config.BosTokenId);
            Assert.Equal(6, overridden.Config.EosTokenId);
        }

        File.Delete(Path.Combine(dir, "tokenizer.json"));
        using var noTokenizer = OuroCheckpoint.Load(dir);
        Assert.Null(noTokenizer.Tokenizer);
        Assert.Contains("bos = eos = 0", Assert.Single(noTokenizer.Warnings));
    }

    [Fact]
    public void ChatMlRequestWithoutChatMlTokensWarnsAndChangesNothing()
    {
        using var source = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 3);
        var dir = Path.Combine(_root, "ref");
        ReferenceLayout.WriteCheckpoint(dir, ReferenceLayout.StoredTensors(source, "F32"), ReferenceLayout.ConfigJson(), tokenizer: false);
        using var loaded = OuroCheckpoint.Load(dir, new OuroLoadOptions { UseChatMlSpecialTokens = true });
        Assert.Contains(loaded.Warnings, w => w.Contains("UseChatMlSpecialTokens") && w.Contains("no tokenizer.json"));
        Assert.Equal(0, loaded.Config.BosTokenId);
        Assert.Equal(0, loaded.Config.EosTokenId);
    }

    [Fact]
    public void LoopRptModelDirectoryLoadsToo()
    {
        using var lm = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 29);
        var dir = Path.Combine(_root, "looprpt");
        LoopRpt.Checkpoints.ModelDirectory.Save(dir, lm, new LoopRpt.Checkpoints.ModelMeta());
        using var loaded = OuroCheckpoint.Load(dir);
        // bitwise: save -> load reads the same bytes: the same computation
        Assert.Equal(Outputs(lm).Logits, Outputs(loaded.Model).Logits);
        Assert.Null(loaded.Tokenizer);
    }

    [Fact]
    public void SavingTheProjectsOwnModelRoundTrips()
    {
        using var lm = ReferenceLayout.RandomModel(ReferenceLayout.TinyConfig(), 23);
        var dir = Path.Combine(_root, "own");
        OuroCheckpoint.Save(lm, dir, new OuroSaveOptions { MaxShardBytes = 20_000 });
        Assert.True(OuroCheckpoint.IsCheckpointDirectory(dir));
        Assert.False(File.Exists(Path.Combine(dir, "tokenizer.json")));
        using var loaded = OuroCheckpoint.Load(dir);
        Assert.True(loaded.WeightFiles.Count > 1);
        // bitwise: save -> load reads the same bytes: the same computation
        Assert.Equal(Outputs(lm).Logits, Outputs(loaded.Model).Logits);
        // Saving over an existing directory replaces it atomically.
        OuroCheckpoint.Save(lm, dir);
        Assert.False(File.Exists(Path.Combine(dir, OuroCheckpoint.IndexFileName)));
        Assert.Empty(Directory.GetFiles(dir, "model-*"));
    }
}
