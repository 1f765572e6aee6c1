namespace LoopRpt.MLNet.Persistence;

/// <summary>Internal column names of the portable twins.</summary>
internal static class Cols
{
    public const string Text = "__LoopRpt_Text";
    public const string Tokens = "__LoopRpt_Tokens";
    public const string StateKey = "__LoopRpt_StateKey";
    public const string TokenizerState = "__LoopRpt_TokenizerState";
    public const string ScorerState = "__LoopRpt_ScorerState";
    public const string TokenIds = "__LoopRpt_TokenIds";
    public const string Out = "__LoopRpt_Out_";
    /// <summary>
    /// Internal name of <see cref="ScoreColumns.ComputeFraction"/>: it keeps the column's former name, so models saved
    /// when it was called ComputeRatio still load (their CopyColumns/DropColumns name it).
    /// </summary>
    public const string OutComputeFraction = Out + "ComputeRatio";
    public const string Features = "__LoopRpt_Features";
    public const string StateKeyValue = "state";

    /// <summary>The internal name of the scorer output column <paramref name="column"/> (one of <see cref="ScoreColumns.All"/>).</summary>
    public static string OutputOf(string column) => column == ScoreColumns.ComputeFraction ? OutComputeFraction : Out + column;
}
