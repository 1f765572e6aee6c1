using System.ComponentModel;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;

namespace LoopRpt.MLNet.Persistence;

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TokenizerInput
{
    /// <summary>The row's text.</summary>
    [ColumnName(Cols.Text)] public ReadOnlyMemory<char> Text { get; set; }
    /// <summary>The tokenizer description (JSON), the same on every row; it selects the cached tokenizer.</summary>
    [ColumnName(Cols.TokenizerState)] public ReadOnlyMemory<char> State { get; set; }
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TokenizerOutput
{
    /// <summary>The row's token ids.</summary>
    [ColumnName(Cols.TokenIds)] public int[] Tokens { get; set; } = [];
}

/// <summary>Persistence plumbing: tokenizes with the tokenizer described by the state column.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class TokenizerMappingFactory : CustomMappingFactory<TokenizerInput, TokenizerOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.Tokenizer.v1";

    /// <inheritdoc/>
    public override Action<TokenizerInput, TokenizerOutput> GetMapping() => static (i, o) =>
    {
        var state = StateCache<TokenizerState>.Get(i.State, TokenizerState.Parse, static _ => true);
        o.Tokens = state.Encode(i.Text.IsEmpty ? null : i.Text.ToString());
    };
}
