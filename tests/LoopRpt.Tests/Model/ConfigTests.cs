using LoopRpt.Model;

namespace LoopRpt.Tests.Model;

public class ConfigTests
{
    [Fact]
    public void JsonRoundTripKeepsReferenceNamesAndUnknownKeys()
    {
        var json = """
            {"model_type":"ouro","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
             "num_key_value_heads":2,"head_dim":16,"vocab_size":100,"total_ut_steps":3,"rope_theta":1000000.0,
             "rms_norm_eps":1e-6,"tie_word_embeddings":true,"early_exit_threshold":0.7,"use_cache":true,"bos_token_id":1}
            """;
        var c = OuroConfig.FromJson(json);
        Assert.Equal(16, c.HeadDim);
        Assert.Equal(3, c.TotalUtSteps);
        // bitwise: a config value parsed from JSON text, not computed
        Assert.Equal(0.7, c.EarlyExitThreshold);
        Assert.True(c.TieWordEmbeddings);
        var again = OuroConfig.FromJson(c.ToJson());
        Assert.Equal(c.ToJson(), again.ToJson());
        Assert.Contains("\"use_cache\": true", again.ToJson());
        Assert.Contains("\"total_ut_steps\": 3", again.ToJson());
    }

    [Theory]
    [InlineData("num_attention_heads", "{\"hidden_size\":30,\"num_attention_heads\":4,\"num_key_value_heads\":4}")]
    [InlineData("num_key_value_heads", "{\"hidden_size\":32,\"num_attention_heads\":4,\"num_key_value_heads\":3}")]
    [InlineData("total_ut_steps", "{\"hidden_size\":32,\"num_attention_heads\":4,\"num_key_value_heads\":4,\"total_ut_steps\":0}")]
    [InlineData("vocab_size", "{\"hidden_size\":32,\"num_attention_heads\":4,\"num_key_value_heads\":4,\"vocab_size\":0}")]
    [InlineData("early_exit_threshold", "{\"hidden_size\":32,\"num_attention_heads\":4,\"num_key_value_heads\":4,\"early_exit_threshold\":1.5}")]
    [InlineData("hidden_act", "{\"hidden_size\":32,\"num_attention_heads\":4,\"num_key_value_heads\":4,\"hidden_act\":\"gelu\"}")]
    [InlineData("eos_token_id", "{\"hidden_size\":32,\"num_attention_heads\":4,\"num_key_value_heads\":4,\"vocab_size\":10,\"eos_token_id\":10}")]
    public void ImpossibleValuesFailNamingTheField(string field, string json)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => OuroConfig.FromJson(json));
        Assert.Equal(field, e.ParamName);
        Assert.Contains(field, e.Message);
    }

    [Fact]
    public void PresetsHaveThePublishedShapes()
    {
        var a = OuroConfig.FromPreset("ouro-1.4b");
        Assert.Equal((24, 2048, 5632, 16, 128, 49152, 4), (a.NumHiddenLayers, a.HiddenSize, a.IntermediateSize, a.NumAttentionHeads, a.HeadDim, a.VocabSize, a.TotalUtSteps));
        Assert.Equal(48, OuroConfig.FromPreset("ouro-2.6b").NumHiddenLayers);
        // 1.4B: the name is the parameter count, roughly.
        Assert.InRange(a.ParameterCount(), 1.3e9, 1.6e9);
        Assert.Throws<ArgumentOutOfRangeException>(() => OuroConfig.FromPreset("huge"));
    }

    /// <summary>
    /// A config.json without num_key_value_heads (or with null) means num_attention_heads, as in the Hugging Face configs
    /// of Ouro's family, not the 16 a config built in code starts from; both readers (LoopRpt directories and Hugging Face
    /// checkpoints) agree, and a model without grouped-query attention loads and scores as before.
    /// </summary>
    [Fact]
    public void AMissingNumKeyValueHeadsDefaultsToNumAttentionHeads()
    {
        var dir = Path.Combine(Path.GetTempPath(), "looprpt-kvheads-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var lm = TestUtil.TinyModel(kvHeads: 4);                   // 4 attention heads, 4 key/value heads
            LoopRpt.Checkpoints.ModelDirectory.Save(dir, lm, new LoopRpt.Checkpoints.ModelMeta());
            var path = Path.Combine(dir, "config.json");
            foreach (var variant in new[] { "absent", "null" })
            {
                var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
                root.Remove("num_key_value_heads");
                if (variant == "null") root["num_key_value_heads"] = null;
                File.WriteAllText(path, root.ToJsonString());
                Assert.Equal(4, LoopRpt.Checkpoints.ModelDirectory.ReadConfig(dir).NumKeyValueHeads);
                using var loaded = LoopRpt.Checkpoints.ModelDirectory.Load(dir).Model;
                using var ids = TestUtil.RandomIds(1, 8, 64, 1);
                using var a = lm.Logits(lm.Forward(ids).Hidden[^1]);
                using var b = loaded.Logits(loaded.Forward(ids).Hidden[^1]);
                Assert.True(TestUtil.BitEqual(a, b), variant);
            }
            // A config built in code keeps its explicit value.
            Assert.Equal(2, OuroConfig.FromJson(OuroConfig.Tiny().ToJson()).NumKeyValueHeads);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }
}
