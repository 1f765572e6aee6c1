using System.ComponentModel;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;

namespace LoopRpt.MLNet.Persistence;

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TextKeyInput
{
    /// <summary>The text column; read only so that the key column follows its rows.</summary>
    [ColumnName(Cols.Text)] public ReadOnlyMemory<char> Text { get; set; }
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class TokensKeyInput
{
    /// <summary>The token-id column; read only so that the key column follows its rows.</summary>
    [ColumnName(Cols.Tokens)] public int[]? Tokens { get; set; }
}

/// <summary>Persistence plumbing (public only because ML.NET's CustomMapping requires it).</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public sealed class StateKeyOutput
{
    /// <summary>The constant key a ValueMapping turns into the state JSON column.</summary>
    [ColumnName(Cols.StateKey)] public string Key { get; set; } = Cols.StateKeyValue;
}

/// <summary>Persistence plumbing: the constant state key for a text input.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class TextStateKeyFactory : CustomMappingFactory<TextKeyInput, StateKeyOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.TextStateKey.v1";
    /// <inheritdoc/>
    public override Action<TextKeyInput, StateKeyOutput> GetMapping() => static (_, o) => o.Key = Cols.StateKeyValue;
}

/// <summary>Persistence plumbing: the constant state key for a token input.</summary>
[EditorBrowsable(EditorBrowsableState.Never)]
[CustomMappingFactoryAttribute(Contract)]
public sealed class TokensStateKeyFactory : CustomMappingFactory<TokensKeyInput, StateKeyOutput>
{
    /// <summary>The contract name ML.NET stores in the saved model.</summary>
    public const string Contract = "LoopRpt.TokensStateKey.v1";
    /// <inheritdoc/>
    public override Action<TokensKeyInput, StateKeyOutput> GetMapping() => static (_, o) => o.Key = Cols.StateKeyValue;
}
