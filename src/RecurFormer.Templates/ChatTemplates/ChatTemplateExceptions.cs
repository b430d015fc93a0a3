namespace RecurFormer.Templates.ChatTemplates;

/// <summary>The checkpoint has no chat template: the chat endpoint cannot serve it (a 400), completions still can.</summary>
public sealed class ChatTemplateNotFoundException(string message) : Exception(message);

/// <summary>The chat input (messages, tools) cannot be given to a template: not a list, a message without a role, …</summary>
public sealed class ChatInputException(string message) : Exception(message);
