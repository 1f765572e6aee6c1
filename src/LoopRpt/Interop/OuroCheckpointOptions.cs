using static TorchSharp.torch;

namespace LoopRpt.Interop;

/// <summary>Options of <see cref="OuroCheckpoint.Load(string, OuroLoadOptions?)"/>.</summary>
public sealed class OuroLoadOptions
{
    /// <summary>Device of the loaded model (default CPU). Tensors are copied there one at a time.</summary>
    public Device? Device { get; init; }

    /// <summary>
    /// Parameter dtype of the loaded model: <see cref="ScalarType.Float32"/> (default) or <see cref="ScalarType.BFloat16"/>.
    /// Stored F32/BF16/F16 tensors are converted while copying; bfloat16 halves the memory (Ouro-1.4B: about 2.9 GB of weights).
    /// </summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>
    /// How bfloat16 weights compute on a CPU (default <see cref="LoopRpt.Model.BFloat16Compute.Auto"/>: float32 compute from
    /// bfloat16 storage on CPUs without AVX-512 BF16, libtorch's bfloat16 kernels where it is present). Sets
    /// <see cref="LoopRpt.Model.OuroForCausalLM.BFloat16Compute"/> of the loaded model.
    /// </summary>
    public LoopRpt.Model.BFloat16Compute BFloat16Compute { get; init; } = LoopRpt.Model.BFloat16Compute.Auto;

    /// <summary>Overrides <c>bos_token_id</c> of config.json (applied after <see cref="UseChatMlSpecialTokens"/>).</summary>
    public int? BosTokenId { get; init; }

    /// <summary>Overrides <c>eos_token_id</c> of config.json (applied after <see cref="UseChatMlSpecialTokens"/>).</summary>
    public int? EosTokenId { get; init; }

    /// <summary>
    /// When config.json has the known-wrong <c>bos_token_id = eos_token_id</c> and the tokenizer has the ChatML tokens,
    /// use <c>&lt;|im_start|&gt;</c> as BOS and <c>&lt;|im_end|&gt;</c> as EOS instead of only warning. Default false.
    /// </summary>
    public bool UseChatMlSpecialTokens { get; init; }

    /// <summary>Load tokenizer.json when present (default true).</summary>
    public bool LoadTokenizer { get; init; } = true;

    /// <summary>Called with each warning as it is found (also collected in <see cref="OuroCheckpoint.Warnings"/>).</summary>
    public Action<string>? OnWarning { get; init; }
}

/// <summary>Options of <see cref="OuroCheckpoint.Save(LoopRpt.Model.OuroForCausalLM, string, OuroSaveOptions?)"/>.</summary>
public sealed class OuroSaveOptions
{
    /// <summary>Default values, defined once.</summary>
    public static class Defaults
    {
        /// <summary>Largest shard written before starting a new one: 5 GB, as <c>save_pretrained</c>.</summary>
        public const long MaxShardBytes = 5_000_000_000;
    }

    /// <summary>Stored dtype: F32, BF16 or F16 (default: the model's own dtype).</summary>
    public ScalarType? DType { get; init; }

    /// <summary>
    /// A single <c>model.safetensors</c> when the weights fit, else <c>model-0000i-of-0000n.safetensors</c> shards of at most
    /// this many bytes (a larger tensor gets a shard of its own) plus <c>model.safetensors.index.json</c>.
    /// </summary>
    public long MaxShardBytes { get; init; } = Defaults.MaxShardBytes;

    /// <summary>Tokenizer written as tokenizer.json (its original bytes); null writes none unless <see cref="SourceDirectory"/> has one.</summary>
    public HfTokenizer? Tokenizer { get; init; }

    /// <summary>
    /// Directory the model was loaded from: its auxiliary files (<c>*.py</c> remote code named by <c>auto_map</c>,
    /// <c>tokenizer_config.json</c>, <c>special_tokens_map.json</c>, <c>generation_config.json</c>, <c>tokenizer.json</c>,
    /// README/LICENSE files) are copied, so Python tools load the result as they loaded the original.
    /// </summary>
    public string? SourceDirectory { get; init; }
}
